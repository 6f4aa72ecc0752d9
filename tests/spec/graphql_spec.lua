-- foundry.graphql: the lpeg grammar for GraphQL documents, and the mutation fields a
-- request would run (aliases, fragments, inline fragments, variables).
local graphql = require "foundry.graphql"

local function names(fields)
  local out = {}
  for i, f in ipairs(fields) do out[i] = f.name end
  return out
end

describe("graphql.parse", function()
  it("parses operations, fields with aliases, arguments, directives and nested selections", function()
    local doc = graphql.parse([[
      # a comment, commas are ignored
      query Q($n: Int = 10, $after: String) @cached(ttl: 1) {
        viewer { login, repositories(first: $n, after: $after) { nodes { name } } }
        me: viewer { id }
      }
    ]])
    local op = doc.operations[1]
    expect(op.operation):equals("query")
    expect(op.name):equals("Q")
    expect(op.variables[1].name):equals("n")
    expect(op.variables[1].type.name):equals("Int")
    expect(op.variables[1].default):equals(10)
    expect(op.selections[1].name):equals("viewer")
    expect(op.selections[2].alias):equals("me")
    local repos = op.selections[1].selections[2]
    expect(repos.name):equals("repositories")
    expect(graphql.is_variable(repos.args.first)):equals(true)
  end)

  it("parses every kind of value", function()
    local doc = graphql.parse([[{ f(i: -12, x: 1.5e3, s: "a\"b\u00e9\uD83D\uDE00", b: """
        block
          text
    """, t: true, n: null, e: APPROVE, l: [1, [2, 3], {k: $v}], o: {a: {b: "c"}}) }]])
    local a = doc.operations[1].selections[1].args
    expect(a.i):equals(-12)
    expect(a.x):equals(1500.0)
    expect(a.s):equals('a"bé😀')
    expect(a.b):equals("block\n  text")
    expect(a.t):equals(true)
    expect(a.n):is(graphql.null)
    expect(graphql.is_enum(a.e)):equals(true)
    expect(graphql.text(a.e)):equals("APPROVE")
    expect(a.l[2][2]):equals(3)
    expect(graphql.is_variable(a.l[3].k)):equals(true)
    expect(a.o.a.b):equals("c")
  end)

  it("keeps an input field named enum or var apart from enums and variables", function()
    local a = graphql.parse('{ f(o: {enum: "x", var: "y"}) }').operations[1].selections[1].args
    expect(graphql.is_enum(a.o)):equals(false)
    expect(a.o.enum):equals("x")
    expect(graphql.resolve(a.o, { y = 1 }).var):equals("y")
  end)

  it("refuses what is not GraphQL", function()
    local bad = {
      "", "{", "{ a(b: ) }", "mutation { a(b: 01) }", "{ a(b: 1.) }", '{ a(b: "\\uD800") }', '{ a(b: "x\ny") }',
      "{ a }}", "query { ... }", "fragment on on T { a }", "type Query { a: Int }", "{ a(b: $) }",
      "{ a @ }", "subscription", "mutation M { }", "{ a(b: [1, 2) }",
    }
    for _, s in ipairs(bad) do
      local ok, err = pcall(graphql.parse, s)
      if ok then error("parsed: " .. s) end
      expect(err.code):equals("graphql.syntax")
    end
    -- a fragment defined twice, an unknown spread
    expect(function() graphql.parse("fragment F on T { a } fragment F on T { b } { ...F }") end):fails("graphql.syntax")
    expect(function() graphql.mutation_fields("mutation { ...Nope }") end):fails("graphql.syntax")
  end)

  it("bounds nesting and size", function()
    expect(function() graphql.parse(string.rep("{a", 300) .. string.rep("}", 300)) end):fails("graphql.syntax")
    expect(function() graphql.parse(string.rep("{a", 60) .. string.rep("}", 60)) end):fails("deeper")
    graphql.parse(string.rep("{a", 20) .. string.rep("}", 20))
    expect(function() graphql.parse("{ a(s: \"" .. string.rep("x", graphql.MAX_BYTES) .. "\") }") end):fails("larger")
  end)
end)

describe("graphql.mutation_fields", function()
  it("finds each top-level mutation field, under aliases and fragments, with variables resolved", function()
    local fields = graphql.mutation_fields([[
      mutation Ship($id: ID!, $ev: PullRequestReviewEvent = APPROVE) {
        innocent: addComment(input: {subjectId: $id, body: "lgtm"}) { clientMutationId }
        ...Sneaky
        ... on Mutation { addPullRequestReview(input: {pullRequestId: $id, event: $ev}) { clientMutationId } }
      }
      fragment Sneaky on Mutation { m: mergePullRequest(input: {pullRequestId: $id}) { clientMutationId } }
      query Harmless { viewer { login } }
    ]], { id = "PR_1" })
    expect(names(fields)):equals({ "addComment", "mergePullRequest", "addPullRequestReview" })
    expect(fields[1].alias):equals("innocent")
    expect(fields[2].alias):equals("m")
    expect(fields[2].args.input.pullRequestId):equals("PR_1")
    -- the default of $ev applies
    expect(graphql.text(fields[3].args.input.event)):equals("APPROVE")
  end)

  it("judges every mutation operation of a document, whatever operationName says", function()
    local fields = graphql.mutation_fields("mutation A { addComment(input: {}) { x } } mutation B { deleteRef(input: {}) { x } }")
    expect(names(fields)):equals({ "addComment", "deleteRef" })
  end)

  it("does not loop on recursive fragments", function()
    local fields = graphql.mutation_fields("mutation { ...F } fragment F on Mutation { a ...G } fragment G on Mutation { b ...F }")
    expect(names(fields)):equals({ "a", "b" })
  end)

  it("finds no mutation in queries, however the text reads", function()
    expect(#graphql.mutation_fields('query { search(query: "mutation { mergePullRequest }") { x } }')):equals(0)
    expect(#graphql.mutation_fields('{ mergePullRequest }')):equals(0)
  end)
end)
