"""What the result files mean: load, validate, analyse, recommend, draw, render. The only reader of results/."""
