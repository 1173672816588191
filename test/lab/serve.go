package lab

import (
	"net"
	"sync"
)

// Serve accepts connections on ln and runs handle for each, on its own
// goroutine, which closes the connection when handle returns. stop closes
// ln and waits for the accept loop and every handler to end.
func Serve(ln net.Listener, handle func(net.Conn)) (stop func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return func() {
		ln.Close()
		wg.Wait()
	}
}
