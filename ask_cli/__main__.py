from ask_cli.cli import main

main()
