// The two images the cluster tests build themselves (no registry is reachable): the pod
// sandbox's pause process and a small echo server and client. Standard library only.
module privpoll.test/cluster/images

go 1.25.0
