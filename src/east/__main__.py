from east.cli.main import main

main()
