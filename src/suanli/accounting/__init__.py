"""Accounting: what the fleet delivered, to whom, at what energy and cost (``suanli report``).

``pricing``: how chip-time becomes energy and dollars (catalog TDP and price, the fleet file's PUE per pool, the
operator's prices, tariff and overheads); ``report``: rows of the report from aggregated usage (the control plane's
usage records or the digital twin's jobs), formats and plots.
"""
