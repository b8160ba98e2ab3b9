package sticky

import "github.com/caddy-sticky/sticky/peers"

// peerGroupStatus is one group in GET /sticky/peers.
type peerGroupStatus struct {
	Group   string               `json:"group"`
	Node    string               `json:"node"`
	Address string               `json:"address"`
	Tables  []string             `json:"tables"`
	Members []peers.MemberStatus `json:"members"`
}

// peerGroupsStatus lists the running config's groups and their members.
func peerGroupsStatus() any {
	out := []peerGroupStatus{}
	for _, h := range state.groupList() {
		members := h.group.Members()
		if members == nil {
			members = []peers.MemberStatus{}
		}
		out = append(out, peerGroupStatus{
			Group:   h.name,
			Node:    h.group.Name(),
			Address: h.group.Addr(),
			Tables:  h.group.Tables(),
			Members: members,
		})
	}
	return out
}
