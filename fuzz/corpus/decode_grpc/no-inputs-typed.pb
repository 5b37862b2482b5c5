

m