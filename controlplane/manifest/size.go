package manifest

// MaxMessageBytes is the one size limit of the config's path through the fleet: the largest
// gRPC message the control plane accepts (admin API, and the bodies of its REST façade) and
// the largest ADS response a proxy accepts. The control plane refuses a write whose snapshot
// would need a larger response (controlplane/snapshot.CheckSize), so a config it stores is
// one every proxy can receive. 16 MiB holds a config of some 50,000 upstreams.
const MaxMessageBytes = 16 << 20
