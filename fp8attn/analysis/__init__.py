"""Error analysis: input distributions, metrics and the FA3 Table 3 report."""
