package validate

import (
	"fmt"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// UpstreamUsers returns the paths of every group member that references the upstream name,
// e.g. ["upstream_groups[0].upstreams[1].name"]; nil when none does. The admin service uses
// it to refuse a deletion (ErrInUse) naming the users.
func UpstreamUsers(c *configv1.Config, name string) []string {
	var out []string
	for i, g := range c.GetUpstreamGroups() {
		for j, m := range g.GetUpstreams() {
			if m.GetName() == name {
				out = append(out, fmt.Sprintf("upstream_groups[%d].upstreams[%d].name", i, j))
			}
		}
	}
	return out
}

// GroupUsers returns the paths of every forward default_group and route target_group that
// references the upstream group name; nil when none does.
func GroupUsers(c *configv1.Config, name string) []string {
	var out []string
	for i, f := range c.GetHttpServer().GetForwards() {
		if f.GetDefaultGroup() == name {
			out = append(out, fmt.Sprintf("http_server.forwards[%d].default_group", i))
		}
		for j, r := range f.GetRouting() {
			if r.GetTargetGroup() == name {
				out = append(out, fmt.Sprintf("http_server.forwards[%d].routing[%d].target_group", i, j))
			}
		}
	}
	return out
}
