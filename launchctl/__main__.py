from launchctl.cli import main

main()
