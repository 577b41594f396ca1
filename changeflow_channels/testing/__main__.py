from .reql_server import main

main()
