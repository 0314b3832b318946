from tokenmeter.cli import main

main()
