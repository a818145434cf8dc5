from callgrid.cli import main

main()
