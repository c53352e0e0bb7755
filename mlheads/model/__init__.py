"""The model: layers, trunks and heads by name, their losses, and Model = trunk + named heads."""
