from credit_platform.cli.main import main

main()
