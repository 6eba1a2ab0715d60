//go:build tools

// Pins CoreDNS for ../../controlplane/build.sh, which builds github.com/coredns/coredns
// from this module. The blank import keeps `go mod tidy` from dropping the requirement.
package tools

import _ "github.com/coredns/coredns"
