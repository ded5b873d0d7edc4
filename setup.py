"""Packaging beyond what pyproject.toml can say: the top-level ``migrations/``
folder ships inside the wheel as the package ``availability.migrations``.

The folder stays where it is (``alembic upgrade head`` from a checkout reads it
through ``alembic.ini``); this mapping lets ``availability migrate`` find the
same revisions in an installed wheel, and in an editable install (where the
mapping points back into the checkout). Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["availability*"])
    + ["availability.migrations", "availability.migrations.versions"],
    package_dir={"availability.migrations": "migrations"},
)
