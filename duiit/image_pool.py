"""CycleGAN's image pool: discriminators see a history of generated images, not only the latest."""

import torch


class ImagePool:
    def __init__(self, size: int, generator: torch.Generator):
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                index = int(torch.randint(0, self.size, (1,), generator=self.generator))
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)

    def state(self) -> dict:
        stacked = torch.cat(self.images).cpu() if self.images else torch.zeros(0)
        return {"images": stacked}

    def load(self, state: dict, device) -> None:
        images = state["images"]
        self.images = [images[n:n + 1].to(device) for n in range(images.shape[0])] if images.numel() else []
