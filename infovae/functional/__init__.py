"""Pure functions behind the plugins (the ``torch.nn.functional`` of infovae).

Shapes: x (n, d), y (m, d); scalars are returned as 0-dim tensors.
"""
