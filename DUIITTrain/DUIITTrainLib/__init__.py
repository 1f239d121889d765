"""Qt-free parts of the DUIIT Train module: worker protocol, labels, manifest, loss plot (importable headless)."""
