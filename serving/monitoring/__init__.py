"""Metric definitions and the cheap per-request accounting behind them."""
