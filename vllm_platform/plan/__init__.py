"""The plan: the validated config resolved once (`resolve.resolve`), from the catalog, the sizing arithmetic
and the fit checks. Every builder above reads its numbers from here."""
