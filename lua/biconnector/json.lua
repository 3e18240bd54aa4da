-- biconnector.json: the C JSON codec (src/json.c).
return require("biconnector.core").json
