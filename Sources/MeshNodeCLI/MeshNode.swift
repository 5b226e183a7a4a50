import ArgumentParser

@main
struct MeshNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh-node",
        abstract: "A peer-to-peer voice mesh node: run a node, manage identities, place calls.",
        version: "0.1.0",
        subcommands: [RunCommand.self, CallCommand.self, IdentityCommand.self, AudioMatchCommand.self, MediaLabCommand.self]
    )
}
