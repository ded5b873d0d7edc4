"""The Alembic revisions, shipped inside the package as ``availability.migrations``
(see ``setup.py``): ``availability migrate`` finds them in an installed wheel."""
