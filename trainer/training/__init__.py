"""One training run: settings, networks, adapters, objective, optimizer, memory, the loop and its state."""
