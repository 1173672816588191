module falg

go 1.26

require golang.org/x/net v0.53.0
