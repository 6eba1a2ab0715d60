//go:build tools

// Package tools pins the control-plane commands that ../build.sh compiles.
// It is never built itself; the imports only keep the dependencies in go.mod.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
