module falg

go 1.26
