// Command echo is the cluster tests' workload.
//
//	echo serve           answer every HTTP request on $PORT (default 8080) with the pod's
//	                     host name; /healthz answers "ok" (for probes)
//	echo get URL         fetch URL (resolving its host through the pod's DNS) and print
//	                     the body; exit 1 on any error
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echo serve | echo get URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve()
	case "get":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: echo get URL")
			os.Exit(2)
		}
		get(os.Args[2])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use serve or get\n", os.Args[1])
		os.Exit(2)
	}
}

func serve() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	name, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, name)
	})
	// A container's PID 1 has no default SIGTERM action: exit on it ourselves.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	server := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func get(url string) {
	client := &http.Client{Timeout: 10 * time.Second}
	answer, err := client.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer answer.Body.Close()
	body, err := io.ReadAll(answer.Body)
	if err != nil || answer.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "%s: status %d, %v\n", url, answer.StatusCode, err)
		os.Exit(1)
	}
	os.Stdout.Write(body)
}
