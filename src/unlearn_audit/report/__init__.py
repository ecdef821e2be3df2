"""The report: report.json is the source of truth; the console table (and later HTML) are views of it."""
