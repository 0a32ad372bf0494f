from faultsvc.cli import main

main()
