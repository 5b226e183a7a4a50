import Foundation
import MeshCall
import MeshControl
import MeshDHT
import MeshIdentity
import MeshLink
import MeshMedia
import MeshRouting
import NIOCore

/// The JSON-RPC methods of the control socket (docs/control.md). Runs on the node's event loop.
extension NodeRuntime: ControlService {
    public func handle(method: String, params: JSONValue, connection: ControlConnection) -> EventLoopFuture<JSONValue> {
        loop.flatSubmit {
            do {
                switch method {
                case "node.info": return self.loop.makeSucceededFuture(self.info())
                case "node.peers":
                    return self.loop.makeSucceededFuture(try JSONValue(encoding: ["peers": self.links.peerInfos(now: Self.now(), describe: Self.describe)]))
                case "dht.routes": return self.loop.makeSucceededFuture(try self.routesJSON())
                case "dht.lookup":
                    guard let text = params["address"]?.stringValue else {
                        throw RPCError.invalidParams("dht.lookup needs \"address\": a wallet address")
                    }
                    let wallet: WalletAddress
                    do { wallet = try WalletAddress(parsing: text) } catch { throw RPCError.invalidParams("\(error)") }
                    return self.lookup(wallet).map { Self.lookupJSON($0, now: Self.now()) }
                case "gossip.routes":
                    return self.loop.makeSucceededFuture(.object([
                        "routes": try JSONValue(encoding: self.gossip.routes(nowMs: Self.now())),
                        "counters": try JSONValue(encoding: self.gossip.counters),
                    ]))
                case "calls.list":
                    let records = self.calls.calls.values.sorted { $0.startedAt < $1.startedAt }
                    return self.loop.makeSucceededFuture(.object(["calls": .array(records.map(self.callJSON))]))
                case "call.hangup": return self.loop.makeSucceededFuture(try self.hangup(params))
                case "call.profile": return self.loop.makeSucceededFuture(try self.setProfile(params))
                case "call.place": return try self.place(params, connection: connection)
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
                self.runCall(self.calls.hangup(id, now: now))
                self.owners[id] = nil
            }
        }
    }

    // MARK: methods

    func info() -> JSONValue {
        let now = Self.now()
        let active = calls.calls.values.filter { $0.state != .ended }.count
        let linkCounters = (try? JSONValue(encoding: links.counters)) ?? .null
        let nodeCounters = (try? JSONValue(encoding: counters)) ?? .null
        let controlCounters = control.flatMap { try? JSONValue(encoding: $0.counters) } ?? .null
        return .object([
            "node": .string(nodeKey.address.checksummed),
            "listen": .string(localEndpoint),
            "controlSocket": .string(config.resolvedControlSocket),
            "wallets": .array(calls.hostedWallets.map { .string($0.checksummed) }),
            "autoAnswer": .string(config.autoAnswer.rawValue),
            "uptimeS": .number(Double((now - startedAt) / 1000)),
            "peersUp": .number(Double(links.upPeers.count)),
            "callsActive": .number(Double(active)),
            "linkCounters": linkCounters,
            "nodeCounters": nodeCounters,
            "controlCounters": controlCounters,
            "socket": socketJSON(),
            "callMalformed": .number(Double(calls.malformed)),
            "version": .string(MeshVersion.string),
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
            "path": .string("neighbour \(record.via.checksummed)"),
            "state": .string(record.state.rawValue),
            "durationS": .number(Double(end - (record.answeredAt ?? end)) / 1000),
        ]
        if let reason = record.endReason { object["endReason"] = .string(reason.description) }
        if let stats = media[record.id]?.stats ?? finished[record.id], let json = try? JSONValue(encoding: stats) {
            object["media"] = json
        }
        return .object(object)
    }

    /// The active call whose id starts with `params.call`.
    private func activeCall(_ params: JSONValue, method: String) throws -> CallRecord {
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
        runCall(calls.hangup(call.id, now: Self.now()))
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
        let started = Self.now()
        return resolve(to).flatMapThrowing { via in
            let now = Self.now()
            // The client may have gone while the callee was being resolved: then there is nobody to talk.
            guard connection.isOpen else { throw RPCError.failed("the client closed the connection") }
            guard let (id, actions) = self.calls.place(from: from, to: to, via: via, bitrate: bitrate, now: now) else {
                throw RPCError.failed("\(from) is already in a call (busy)")
            }
            self.owners[id] = connection
            self.setupStarted[id] = started
            self.runCall(actions)
            self.logger.info("placing call", metadata: ["call": "\(id)", "from": "\(from)", "to": "\(to)", "via": "\(via)"])
            return .object(["call": .string(id.description), "from": .string(from.checksummed), "to": .string(to.checksummed),
                            "via": .string(via.checksummed), "resolveMs": .number(Double(now - started))])
        }
    }

    /// The callee's home node: from gossip when its verified route names a linked neighbour and that node
    /// confirms it hosts `address`, else from the DHT (the wallet-signed presence record). A gossip route its
    /// home node does not confirm (a no, or silence) is refuted: dropped here and withdrawn from the neighbours,
    /// and the call goes on through the DHT (docs/gossip.md).
    private func resolve(_ address: WalletAddress) -> EventLoopFuture<WalletAddress> {
        guard let origin = gossip.route(to: address)?.origin, links.isUp(origin) else { return resolveThroughDHT(address) }
        let now = Self.now()
        let query = SecureRandom.uint32()
        let promise = loop.makePromise(of: WalletAddress.self)
        resolves[query] = PendingResolve(promise: promise, address: address, home: origin, deadline: now + Self.resolveTimeoutMs)
        run(links.send(AppMessage.resolveRequest(query: query, address: address).serialize(), to: origin, now: now))
        return promise.futureResult.flatMapError { error in
            self.logger.warning("gossip route not confirmed; asking the DHT", metadata: [
                "wallet": "\(address)", "home": "\(origin)", "error": "\(error)"])
            self.runGossip(self.gossip.refute(address, origin: origin, nowMs: Self.now()))
            return self.resolveThroughDHT(address)
        }
    }

    /// Finds the wallet's home node in the DHT and opens a link to it (pinned to its node key) when there is
    /// none yet. Calls go between linked nodes in this version: a home node reachable only through relays is
    /// reported as such.
    private func resolveThroughDHT(_ address: WalletAddress) -> EventLoopFuture<WalletAddress> {
        lookup(address).flatMap { outcome in
            guard let record = outcome.record, !record.isWithdrawal else {
                return self.loop.makeFailedFuture(RPCError.failed(
                    "\(address) is not online: gossip has no confirmed route and the DHT has no record (\(outcome.queried) nodes asked"
                        + (outcome.clockSkewNote.map { "; \($0)" } ?? "") + ")"))
            }
            let home = record.homeNode.address
            if self.links.isUp(home) { return self.loop.makeSucceededFuture(home) }
            let targets = record.endpoints.compactMap { try? SocketAddress(dhtEndpoint: $0) }
            guard !targets.isEmpty else {
                return self.loop.makeFailedFuture(RPCError.failed(
                    "\(address) is hosted by \(home), which is reachable only through relays; relay chains are not supported yet"))
            }
            return self.openLink(to: home, at: targets, until: Self.now() + Self.resolveTimeoutMs, nextTry: 0)
        }
    }

    /// Opens a link for a call (not kept up after it dies, unlike `--peer` links): a handshake to each
    /// endpoint every 500 ms until the link is up or the deadline passes.
    private func openLink(to node: WalletAddress, at targets: [SocketAddress], until deadline: Int64, nextTry: Int64)
        -> EventLoopFuture<WalletAddress>
    {
        if links.isUp(node) { return loop.makeSucceededFuture(node) }
        let now = Self.now()
        guard now < deadline else {
            return loop.makeFailedFuture(RPCError.failed("cannot open a link to \(node), the callee's home node"))
        }
        var retryAt = nextTry
        if now >= nextTry {
            for target in targets { run(links.dialOnce(target, pinned: node, now: now)) }
            retryAt = now + 500
        }
        return loop.scheduleTask(in: .milliseconds(20)) {}.futureResult.flatMap {
            self.openLink(to: node, at: targets, until: deadline, nextTry: retryAt)
        }
    }
}

public enum MeshVersion {
    public static let string = "0.1.0"
}
