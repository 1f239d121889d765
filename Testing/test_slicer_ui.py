"""Static checks of the Slicer modules, which cannot be imported without Slicer's qt:

- every widget the module code names (self.ui.<name>) exists in its .ui file;
- every SlicerParameterName in the .ui is a field of the module's parameterNodeWrapper class, bound to a
  widget type that parameterNodeWrapper can connect to that field's type;
- the .ui files are Qt Designer XML with declared custom widgets, icons are real PNGs, the CMake lists name
  files that exist (and every Lib file), and the module files compile.
"""

import ast
import re
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import slicer_helpers  # noqa: F401  (puts the modules' Lib folders on sys.path)

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["DUIITTrain", "DUIITTranslate"]
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QSpinBox", "QDoubleSpinBox", "QLineEdit",
              "QCheckBox", "QProgressBar", "QTableWidget", "QPlainTextEdit", "QTextEdit", "QGroupBox"}
# parameterNodeWrapper's GUI connectors: which widget class represents which (unannotated) field type.
CONNECTORS = {
    "QComboBox": ("str",),  # needs a Choice annotation
    "QSpinBox": ("int",),
    "QDoubleSpinBox": ("float",),
    "QCheckBox": ("bool",),
    "QLineEdit": ("str",),
    "ctkPathLineEdit": ("pathlib.Path",),
    "qMRMLNodeComboBox": ("vtkMRML",),
}


def module_source(name):
    return (ROOT / name / f"{name}.py").read_text(encoding="utf-8")


def ui_tree(name):
    return ElementTree.parse(ROOT / name / "Resources" / "UI" / f"{name}.ui")


def ui_widgets(name) -> dict:
    return {w.get("name"): w for w in ui_tree(name).iter("widget")}


def parameter_fields(name) -> dict:
    """{field: annotation source} of the class decorated with @parameterNodeWrapper."""
    tree = ast.parse(module_source(name))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    raise AssertionError(f"{name}: no @parameterNodeWrapper class")


@pytest.mark.parametrize("name", MODULES)
def test_every_ui_name_used_in_code_exists_in_the_ui_file(name):
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", module_source(name)))
    assert len(used) > 5
    missing = sorted(used - set(ui_widgets(name)))
    assert not missing, f"{name}.py uses widgets that {name}.ui lacks: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_parameter_names_in_the_ui_are_fields_with_a_matching_widget(name):
    fields = parameter_fields(name)
    bound = {}
    for widget_name, widget in ui_widgets(name).items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", f"{widget_name}: SlicerParameterName must be a dynamic property"
                bound[prop.find("string").text] = widget
    assert bound, f"{name}.ui binds no widget to the parameter node"
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f"{name}.ui binds parameters the parameter node lacks: {unknown}"
    for parameter, widget in bound.items():
        annotation = fields[parameter]
        accepted = CONNECTORS.get(widget.get("class"))
        assert accepted, f"{parameter}: no parameterNodeWrapper connector for {widget.get('class')}"
        assert any(t in annotation for t in accepted), f"{parameter}: {annotation} on a {widget.get('class')}"
        if widget.get("class") == "QComboBox":
            assert "Choice(" in annotation, f"{parameter}: a QComboBox needs a Choice annotation"
        if widget.get("class") in ("QSpinBox", "QDoubleSpinBox"):
            assert "WithinRange(" in annotation, f"{parameter}: unbounded spin box"


@pytest.mark.parametrize("name", MODULES)
def test_choice_lists_match_the_combo_box_items(name):
    """The .ui lists the same items the parameter node allows (the connector refills them, but the
    .ui is what Designer and the README show)."""
    import DUIITTrainLib.logic as train_lib
    namespace = {"trainLib": train_lib}  # the names the annotations use
    for constant, value in re.findall(r"^([A-Z_]+) = (\[.*\])$", module_source(name), re.M):
        namespace[constant] = ast.literal_eval(value)
    fields = parameter_fields(name)
    for widget in ui_widgets(name).values():
        if widget.get("class") != "QComboBox":
            continue
        parameter = next(p.find("string").text for p in widget.findall("property")
                         if p.get("name") == "SlicerParameterName")
        choices = eval(re.search(r"Choice\((.*)\)\]$", fields[parameter]).group(1), namespace)  # noqa: S307
        items = [item.find("property/string").text for item in widget.findall("item")]
        assert items == list(choices), f"{parameter}: .ui items {items} != Choice {list(choices)}"


@pytest.mark.parametrize("name", MODULES)
def test_ui_file_is_designer_xml_with_declared_custom_widgets(name):
    tree = ui_tree(name)
    root = tree.getroot()
    assert root.tag == "ui" and root.get("version") == "4.0" and root.find("class").text == name
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == name
    declared = {c.find("class").text for c in root.iter("customwidget")}
    for widget in tree.iter("widget"):
        cls = widget.get("class")
        assert cls in QT_CLASSES or cls in declared, f"{widget.get('name')}: {cls} is not declared"
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    assert f'resourcePath("UI/{name}.ui")' in module_source(name)
    for connection in root.iter("connection"):  # MRML widgets get the scene from the top widget
        assert connection.find("sender").text == name
        assert connection.find("receiver").text in names


@pytest.mark.parametrize("name", MODULES)
def test_mrml_node_selectors_get_the_scene(name):
    root = ui_tree(name).getroot()
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    for widget in root.iter("widget"):
        if widget.get("class", "").startswith("qMRML") and widget.get("class") != "qMRMLWidget":
            assert widget.get("name") in receivers, f"{widget.get('name')} never gets the MRML scene"


@pytest.mark.parametrize("path", [f"{m}/Resources/Icons/{m}.png" for m in MODULES] + ["Resources/Icons/DUIIT.png"])
def test_icons_are_png(path):
    data = (ROOT / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and 64 <= width <= 256


@pytest.mark.parametrize("name", MODULES)
def test_cmake_lists_name_existing_files_and_every_lib_file(name):
    cmake = (ROOT / name / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"set(MODULE_NAME {name})" in cmake and "WITH_GENERIC_TESTS" in cmake
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    listed = re.findall(r"^\s+(\S+\.(?:py|png|ui))\s*$", cmake.replace("${MODULE_NAME}", name), re.M)
    for path in listed:
        assert (ROOT / name / path).is_file(), f"{name}/CMakeLists.txt lists a missing file: {path}"
    lib = {f"{name}Lib/{p.name}" for p in (ROOT / name / f"{name}Lib").glob("*.py")}
    assert lib and lib <= set(listed), f"Lib files not installed: {sorted(lib - set(listed))}"
    testing = (ROOT / name / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    for script in re.findall(r"SCRIPT (\S+)\)", testing):
        assert (ROOT / name / "Testing" / "Python" / script).is_file()


def test_top_level_cmake_is_an_extension():
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(DUIIT)" in cmake
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', cmake), key
    assert re.search(r'set\(EXTENSION_DEPENDS "?PyTorch"?\)', cmake)
    for sub in ("duiit", *MODULES):
        assert f"add_subdirectory({sub})" in cmake and (ROOT / sub / "CMakeLists.txt").is_file()
    assert "find_package(Slicer REQUIRED)" in cmake and "${Slicer_EXTENSION_CPACK}" in cmake


@pytest.mark.parametrize("name", MODULES)
def test_module_files_compile_and_keep_qt_out_of_lib(name):
    compile(module_source(name), f"{name}.py", "exec")
    source = module_source(name)
    for cls in (name, f"{name}Widget", f"{name}Logic", f"{name}Test"):
        assert re.search(rf"^class {cls}\(", source, re.M), cls
    logic = source[source.index(f"class {name}Logic("):source.index(f"class {name}Test(")]
    assert "qt." not in logic and "ctk." not in logic, "the Logic class must not use qt"
    for path in (ROOT / name / f"{name}Lib").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(qt|ctk)\b", text, re.M), f"{path.name} imports qt"
    for path in (ROOT / "duiit").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(qt|ctk)\b", text, re.M), f"duiit/{path.name} imports qt"
        if path.name != "mrml.py":
            assert not re.search(r"^\s*(import|from)\s+slicer\b", text, re.M), f"duiit/{path.name} imports slicer"
