from midtrain.cli import console_main

console_main()
