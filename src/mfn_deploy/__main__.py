from mfn_deploy.cli import main

main()
