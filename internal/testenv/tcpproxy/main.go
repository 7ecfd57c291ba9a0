// Command tcpproxy forwards TCP connections from a loopback port to a target (a unix
// socket path or host:port), for tests that freeze a peer by stopping this process
// (SIGSTOP): connections are still accepted by the kernel, and nothing answers.
//
//	tcpproxy unix:/var/run/docker.sock   # prints the listening address, then serves
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tcpproxy unix:PATH|HOST:PORT")
		os.Exit(2)
	}
	network, addr := "tcp", os.Args[1]
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial(network, addr)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}
