from .cli import main

main(prog_name="bitnet-pack")
