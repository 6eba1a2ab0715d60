//go:build tools

// Package tools pins the etcd server that ../build.sh compiles.
// It is never built itself; the import only keeps the dependencies in go.mod.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
