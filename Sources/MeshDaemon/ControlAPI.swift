import Foundation
import MeshCall
import MeshControl
import MeshDHT
import MeshIdentity
import MeshLink
import MeshMedia
import MeshNodeCore
import MeshRouting
import NIOCore

/// The JSON-RPC methods of the control socket (docs/control.md). Runs on the node's event loop.
extension NodeRuntime: ControlService {
    public func handle(method: String, params: JSONValue, connection: ControlConnection) -> EventLoopFuture<JSONValue> {
        loop.flatSubmit {
            // A request may make work sooner than the core timer is armed for (a call placed, a link dialled).
            self.endTurnSoon()
            do {
                switch method {
                case "node.info": return self.loop.makeSucceededFuture(self.info())
                case "node.metrics": return self.loop.makeSucceededFuture(try JSONValue(encoding: self.metricsSnapshot()))
                case "node.peers":
                    return self.loop.makeSucceededFuture(try JSONValue(encoding: ["peers": self.links.peerInfos(now: Self.now(), describe: Self.describe)]))
                case "dht.routes": return self.loop.makeSucceededFuture(try self.routesJSON())
                case "dht.lookup":
                    guard let text = params["address"]?.stringValue else {
                        throw RPCError.invalidParams("dht.lookup needs \"address\": a wallet address")
                    }
                    let wallet: WalletAddress
                    do { wallet = try WalletAddress(parsing: text) } catch { throw RPCError.invalidParams("\(error)") }
                    return self.lookup(wallet).map { Self.lookupJSON($0, wallMs: Self.wallNow()) }
                case "gossip.routes":
                    return self.loop.makeSucceededFuture(.object([
                        "routes": try JSONValue(encoding: self.gossip.routes(nowMs: Self.now())),
                        "counters": try JSONValue(encoding: self.gossip.counters),
                    ]))
                case "calls.list":
                    let records = self.calls.calls.values.sorted { $0.startedAt < $1.startedAt }
                    return self.loop.makeSucceededFuture(.object(["calls": .array(records.map(self.callJSON))]))
                case "call.hangup": return self.loop.makeSucceededFuture(try self.hangup(params))
                case "sessions.list":
                    return self.loop.makeSucceededFuture(.object([
                        "sessions": try JSONValue(encoding: self.relay.sessions(now: Self.now())),
                        "counters": try JSONValue(encoding: self.relay.counters),
                    ]))
                case "route.explain": return try self.explainRoute(params)
                case "call.profile": return self.loop.makeSucceededFuture(try self.setProfile(params))
                case "call.place": return try self.place(params, connection: connection)
                case "call.hold": return self.loop.makeSucceededFuture(try self.hold(params, true))
                case "call.resume": return self.loop.makeSucceededFuture(try self.hold(params, false))
                case "call.mute": return self.loop.makeSucceededFuture(try self.mute(params, true))
                case "call.unmute": return self.loop.makeSucceededFuture(try self.mute(params, false))
                case "call.quelch": return self.loop.makeSucceededFuture(try self.quelch(params, true))
                case "call.unquelch": return self.loop.makeSucceededFuture(try self.quelch(params, false))
                case "call.transfer": return self.loop.makeSucceededFuture(try self.askTransfer(params))
                default: throw RPCError.methodNotFound(method)
                }
            } catch {
                return self.loop.makeFailedFuture(error)
            }
        }
    }

    public func notification(method: String, params: JSONValue, connection: ControlConnection) {
        loop.execute {
            guard method == "audio.frame", let idText = params["call"]?.stringValue, let id = CallID(hex: idText),
                  self.owners[id] == connection, let pcm = params["pcm"]?.stringValue.flatMap(PCM.samples(base64:)),
                  let m = self.media[id] else { return }
            m.enqueue(pcm)
        }
    }

    public func closed(_ connection: ControlConnection) {
        loop.execute {
            let now = Self.now()
            for (id, owner) in self.owners where owner == connection {
                self.hangUp(id)
                self.owners[id] = nil
            }
            // Calls still being placed for this client: nobody is left to talk.
            for (id, placing) in self.placing where placing.connection == connection {
                self.placing[id] = nil
                self.withCore { $0.abandon(id, now: $1, into: &$2) }
                placing.promise.fail(RPCError.failed("the client closed the connection"))
            }
        }
    }

    // MARK: methods

    func info() -> JSONValue {
        let now = Self.now()
        let active = calls.calls.values.filter { $0.state != .ended }.count
        let linkCounters = (try? JSONValue(encoding: links.counters)) ?? .null
        // The shell's counters and the core's, as one object.
        var nodeCounters = (try? JSONValue(encoding: counters)) ?? .null
        if case .object(var shell) = nodeCounters, case .object(let core)? = try? JSONValue(encoding: core.counters) {
            shell.merge(core) { first, _ in first }
            nodeCounters = .object(shell)
        }
        let controlCounters = control.flatMap { try? JSONValue(encoding: $0.counters) } ?? .null
        return .object([
            "node": .string(nodeKey.address.checksummed),
            "listen": .string(localEndpoint),
            "controlSocket": .string(config.resolvedControlSocket),
            "metrics": metricsAddress.map(JSONValue.string) ?? .null,
            "wallets": .array(calls.hostedWallets.map { .string($0.checksummed) }),
            "autoAnswer": .string(config.autoAnswer.rawValue),
            "uptimeS": .number(Double((now - startedAt) / 1000)),
            "peersUp": .number(Double(links.upPeers.count)),
            "callsActive": .number(Double(active)),
            "sessions": .number(Double(relay.sessionCount)),
            "linkCounters": linkCounters,
            "nodeCounters": nodeCounters,
            "controlCounters": controlCounters,
            "socket": socketJSON(),
            "storeWriter": (try? JSONValue(encoding: writer.counters)) ?? .null,
            "callMalformed": .number(Double(calls.malformed)),
            "direct": directStatsJSON(),
            "version": .string(MeshVersion.string),
        ])
    }

    /// Direct paths (docs/calls.md, "Direct paths"): attempts, successes, fallbacks, and the time from answer to the
    /// first media on the direct path over the latest calls that got there (median, 95th percentile, largest).
    private func directStatsJSON() -> JSONValue {
        let times = directTimes.sorted()
        func at(_ q: Double) -> JSONValue { times.isEmpty ? .null : .number(Double(times[min(times.count - 1, Int(q * Double(times.count)))])) }
        return .object([
            "attempts": .number(Double(counters.directAttempts)), "successes": .number(Double(counters.directSuccesses)),
            "fallbacks": .number(Double(counters.directFallbacks)),
            "msToDirect": .object(["count": .number(Double(times.count)), "p50": at(0.5), "p95": at(0.95), "max": times.last.map { .number(Double($0)) } ?? .null]),
        ])
    }

    /// The UDP socket's buffers as granted and the datagrams the kernel dropped for a full receive buffer.
    private func socketJSON() -> JSONValue {
        guard let status = udpSocket?.status() else { return .null }
        return .object([
            "bufferAskedBytes": .number(Double(config.socketBuffer)),
            "receiveBufferBytes": .number(Double(status.receiveBufferBytes)),
            "sendBufferBytes": .number(Double(status.sendBufferBytes)),
            "kernelDrops": .number(Double(status.kernelDrops)),
        ])
    }

    func callJSON(_ record: CallRecord) -> JSONValue {
        let now = Self.now()
        let end = record.endedAt ?? now
        var object: [String: JSONValue] = [
            "id": .string(record.id.description),
            "role": .string(record.role.rawValue),
            "local": .string(record.local.checksummed),
            "remote": .string(record.remote.checksummed),
            "via": .string(record.via.checksummed),
            "path": .string(pathText(record)),
            "state": .string(record.state.rawValue),
            "durationS": .number(Double(end - (record.answeredAt ?? end)) / 1000),
        ]
        if let reason = record.endReason { object["endReason"] = .string(reason.description) }
        if let chains = try? JSONValue(encoding: shownChains(record.id, now: now)), chains != .array([]) {
            object["chains"] = chains
        }
        if let switches = chainHistory[record.id]?.switches, !switches.isEmpty, let json = try? JSONValue(encoding: switches) {
            object["chainSwitches"] = json
        }
        if let direct = directJSON(record.id, now: now) { object["direct"] = direct }
        if controls[record.id] != nil { object["control"] = controlJSON(record.id) }
        if let stats = media[record.id]?.stats ?? finished[record.id], let json = try? JSONValue(encoding: stats) {
            object["media"] = json
        }
        return .object(object)
    }

    /// "direct srflx A:P > srflx B:Q" while media goes direct; else "chain A > B > C" (the active chain's nodes after this one) at the caller, "chain from NODE" at the callee.
    private func pathText(_ record: CallRecord) -> String {
        if let direct = directPathText(record.id) { return direct }
        guard record.role == .caller, let chain = shownChains(record.id, now: Self.now()).first else {
            return "chain from \(record.via.checksummed)"
        }
        return (chain.role == "lost" ? "lost chain " : "chain ") + chain.nodes.joined(separator: " > ")
    }

    /// The active call whose id starts with `params.call`.
    func activeCall(_ params: JSONValue, method: String) throws -> CallRecord {
        guard let text = params["call"]?.stringValue?.lowercased(), !text.isEmpty else {
            throw RPCError.invalidParams("\(method) needs \"call\": a call id")
        }
        let matches = calls.calls.values.filter { $0.id.description.hasPrefix(text) && $0.state != .ended }
        guard matches.count == 1, let call = matches.first else {
            throw RPCError.failed(matches.isEmpty ? "no active call \(text)" : "call id \(text) is ambiguous")
        }
        return call
    }

    /// Switches this side's encoder of an active call to another quality profile.
    private func setProfile(_ params: JSONValue) throws -> JSONValue {
        let call = try activeCall(params, method: "call.profile")
        let names = QualityProfile.all.map(\.name).joined(separator: ", ")
        guard let name = params["profile"]?.stringValue, let profile = QualityProfile.named(name) else {
            throw RPCError.invalidParams("call.profile needs \"profile\": one of \(names)")
        }
        guard let m = media[call.id] else { throw RPCError.failed("call \(call.id) has no media yet") }
        try m.apply(profile)
        logger.info("profile switched", metadata: ["call": "\(call.id)", "profile": "\(name)"])
        return .object(["call": .string(call.id.description), "profile": .string(name)])
    }

    private func hangup(_ params: JSONValue) throws -> JSONValue {
        let call = try activeCall(params, method: "call.hangup")
        hangUp(call.id)
        return .object(["call": .string(call.id.description), "state": .string("ended")])
    }

    private func place(_ params: JSONValue, connection: ControlConnection) throws -> EventLoopFuture<JSONValue> {
        guard let toText = params["to"]?.stringValue else { throw RPCError.invalidParams("call.place needs \"to\": a wallet address") }
        let to: WalletAddress
        do { to = try WalletAddress(parsing: toText) } catch { throw RPCError.invalidParams("\(error)") }
        let from: WalletAddress
        if let fromText = params["from"]?.stringValue {
            do { from = try WalletAddress(parsing: fromText) } catch { throw RPCError.invalidParams("\(error)") }
            guard calls.hosts(from) else { throw RPCError.invalidParams("\(from) is not a wallet this node hosts") }
        } else {
            guard let first = calls.hostedWallets.first else { throw RPCError.failed("this node hosts no wallet") }
            from = first
        }
        guard !calls.hosts(to) else { throw RPCError.failed("\(to) is hosted by this node; call it from another node") }
        let bitrate = params["bitrate"]?.intValue ?? config.bitrate
        guard (6_000...128_000).contains(bitrate) else { throw RPCError.invalidParams("bitrate must be 6000–128000 bit/s") }
        guard !calls.inCall(from), let key = wallets.first(where: { $0.address == from }) else {
            throw RPCError.failed("\(from) is already in a call (busy)")
        }
        return placeCall(id: CallID.random(), key: key, to: to, bitrate: bitrate, replacing: nil, connection: connection)
    }

    /// A call being placed for a client (`placeCall`): answered when the core offers it or gives up.
    struct Placing {
        let promise: EventLoopPromise<JSONValue>
        let connection: ControlConnection
        let started: Int64
    }

    /// Places a call for `connection`'s client (the one that placed it, or the client of the call a blind transfer
    /// replaces): the core resolves the callee, reaches its home node, builds the call's first chain and offers the
    /// call (docs/forwarding.md).
    func placeCall(id: CallID, key: PrivateKey, to: WalletAddress, bitrate: Int, replacing: CallID?,
                   connection: ControlConnection) -> EventLoopFuture<JSONValue> {
        let promise = loop.makePromise(of: JSONValue.self)
        placing[id] = Placing(promise: promise, connection: connection, started: Self.now())
        withCore { $0.place(id, from: key, to: to, bitrate: bitrate, replacing: replacing, now: $1, into: &$2) }
        return promise.futureResult
    }

    /// The core offered a call on its first chain: its client gets the answer to `call.place`.
    func placed(_ id: CallID, home: Home, resolvedAt: Int64, now: Int64) {
        guard let pending = placing.removeValue(forKey: id) else { return }
        guard pending.connection.isOpen else {
            hangUp(id)
            pending.promise.fail(RPCError.failed("the client closed the connection"))
            return
        }
        guard let record = calls.calls[id] else {
            pending.promise.fail(RPCError.failed("call \(id) ended as it was offered"))
            return
        }
        owners[id] = pending.connection
        setupStarted[id] = pending.started
        let chain = relay.chains(call: id.raw, now: now).first
        logger.info("placing call", metadata: ["call": "\(id)", "from": "\(record.local)", "to": "\(record.remote)", "home": "\(home.node)",
                                              "chain": "\(chain?.nodes.joined(separator: ">") ?? "-")"])
        pending.promise.succeed(.object([
            "call": .string(id.description), "from": .string(record.local.checksummed), "to": .string(record.remote.checksummed),
            "via": .string(home.node.checksummed), "home": .string(home.node.checksummed),
            "chain": chain.flatMap { try? JSONValue(encoding: $0) } ?? .null,
            "resolveMs": .number(Double(resolvedAt - pending.started)), "chainMs": .number(Double(now - resolvedAt)),
        ]))
    }

    typealias Home = HomeResolver<SocketAddress>.Home

    /// The callee's home node (`HomeResolver`; docs/routing.md, "Wallet → home node").
    private func resolve(_ address: WalletAddress) -> EventLoopFuture<Home> {
        let promise = loop.makePromise(of: Home.self)
        endTurnSoon()
        let id = core.resolve(address, now: Self.time(), into: &output)
        resolving[id] = promise
        handleEvents()
        return promise.futureResult
    }

    /// `node-ctl route 0xWALLET`: where the wallet is homed (gossip or the DHT) and the next hops a chain set-up
    /// from here would try, in order, with their costs; nothing is dialled.
    private func explainRoute(_ params: JSONValue) throws -> EventLoopFuture<JSONValue> {
        guard let text = params["address"]?.stringValue else { throw RPCError.invalidParams("route.explain needs \"address\": a wallet address") }
        let wallet: WalletAddress
        do { wallet = try WalletAddress(parsing: text) } catch { throw RPCError.invalidParams("\(error)") }
        if calls.hosts(wallet) {
            return loop.makeSucceededFuture(.object(["wallet": .string(wallet.checksummed), "home": .string(nodeKey.address.checksummed),
                                                     "source": .string("hosted here"), "candidates": .array([])]))
        }
        return resolve(wallet).map { home in
            // The relay engine's own order, annotated with where each next hop comes from and what it costs.
            let routed = Dictionary(self.gossip.neighbourRoutes(to: home.node).map { ($0.via, $0) }, uniquingKeysWith: { first, _ in first })
            let candidates = self.relay.firstHops(toward: home.node, hints: home.hints, routes: self.routes).map { via -> JSONValue in
                let (links, cost, why): (Double, JSONValue, String)
                if via == home.node {
                    let q = self.links.quality(via)
                    let linkCost = NodeCore<SocketAddress>.linkCost(rttMs: q?.rttMs, lossPercent: q?.lossPercent ?? 0)
                    (links, cost, why) = (1, .number(Double(linkCost)), "the home node is a linked neighbour")
                } else if let route = routed[via] {
                    (links, cost, why) = (Double(route.links), .number(Double(route.metric)), "gossip node route")
                } else {
                    (links, cost, why) = (2, .null, "a relay the home node's record lists")
                }
                return .object(["via": .string(via.checksummed), "links": .number(links), "cost": cost, "why": .string(why)])
            }
            return .object(["wallet": .string(wallet.checksummed), "home": .string(home.node.checksummed),
                            "source": .string(home.source), "hopLimit": .number(Double(self.config.hopLimit)),
                            "relays": .array(home.hints.map { .string($0.checksummed) }), "candidates": .array(candidates)])
        }
    }

}

public enum MeshVersion {
    public static let string = "0.1.0"
}
