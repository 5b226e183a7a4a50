import MeshIdentity
import MeshLink

/// The forwarding layer's view of a node, as the daemon and the simulator's whole node give it to the relay engine:
/// the links up (the link manager), gossip's node routes to the hop limit, and each link's figures. Made for one
/// call of the relay engine and gone before either core changes, so neither is copied.
public struct LinkRoutes<Address: LinkEndpoint>: RelayRoutes {
    public let links: LinkManager<Address>
    public let gossip: GossipEngine

    public init(links: LinkManager<Address>, gossip: GossipEngine) {
        self.links = links
        self.gossip = gossip
    }

    public func isUp(_ node: WalletAddress) -> Bool { links.isUp(node) }

    public func nextHops(toward target: WalletAddress, within hops: Int) -> [WalletAddress] {
        var next: [WalletAddress] = links.isUp(target) ? [target] : []
        for route in gossip.neighbourRoutes(to: target) where route.links <= hops && route.via != target && links.isUp(route.via) {
            next.append(route.via)
        }
        return next
    }

    public func figures(_ neighbour: WalletAddress) -> HopFigures {
        let quality = links.quality(neighbour)
        return HopFigures(node: links.localAddress, rttMs: quality?.rttMs, lossPercent: quality?.lossPercent ?? 0)
    }
}
