from privpoll.cli import main

main()
