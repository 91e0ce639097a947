"""The neuron: NumPy kernels and optimizers, the wire codec and step protocol, the actors, `python -m neuron`."""
