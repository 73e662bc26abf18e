"""Runtime components, chosen by configuration by name, behind one interface per capability."""
