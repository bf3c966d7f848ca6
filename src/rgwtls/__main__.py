from rgwtls.cli import main

main()
