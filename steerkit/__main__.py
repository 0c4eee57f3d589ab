from steerkit.cli.main import main

main()
