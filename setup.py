"""Package discovery for the whole tree: ``tongsearch_qr`` as it lies, plus the adapters (``integrations/``)
and the training module (``training/``), which live at the top of the repository and install as
``tongsearch_qr.integrations`` and ``tongsearch_qr.training``. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {"tongsearch_qr.integrations": "integrations", "tongsearch_qr.training": "training"}
#: folders of data files only (no __init__.py): packages too, or setuptools warns that it would ignore them
DATA_PACKAGES = ["tongsearch_qr.embedded", "tongsearch_qr.training.configs"]

packages = find_packages(include=["tongsearch_qr", "tongsearch_qr.*"]) + DATA_PACKAGES
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages, package_dir=dict(MAPPED))
