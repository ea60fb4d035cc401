"""Compensate: what removed channels carried, folded data-free or fitted from calibration data."""
