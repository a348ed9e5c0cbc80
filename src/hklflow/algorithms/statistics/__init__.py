"""Whether the uncertainties of a merged volume hold: I/sigma, chi^2/nu of symmetry
equivalents and CC1/2 in shells of |Q|."""
