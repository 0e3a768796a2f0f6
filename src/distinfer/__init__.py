"""distinfer: MindSpore-shaped semi-auto-parallel models on CPUs, MPI ranks as devices."""
__version__ = "0.1.0"
