// Kernels module: see ARCHITECTURE.md.
