from nsjax.cli import console

console()
