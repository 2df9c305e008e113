"""The ``east`` command line. Each module registers one command or command group.

Modules import heavy libraries (torch, zarr, dask) inside the command functions so that
``east --help`` stays fast.
"""
