"""The speed engine: how the attacks differentiate, on which kernels, how many restarts at once, and in how much memory."""
