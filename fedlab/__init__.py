"""fedlab: federated learning experiments on Foursquare check-ins."""

__version__ = "0.1.0"
