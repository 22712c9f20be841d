from ask_cli.entry import main

main()
